"""Vector helpers shared by the stage families: text embeddings, k-means, PCA."""
