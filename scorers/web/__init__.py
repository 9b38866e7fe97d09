"""Web front end: main-text extraction from crawled HTML (`extract`) and URL block lists (`url_filter`)."""
