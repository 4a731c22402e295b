"""Models: the sparse arch (EmbeddingBagCollection), the one dense-arch interface, one file per arch, a registry."""
