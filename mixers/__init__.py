"""Selection and mixing: embeddings, k-means, cluster sampling, proxies, weight learners, RegMix."""
