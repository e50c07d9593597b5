"""Asset modules, one per group: data, media, embeddings, model, serving, feature_store."""
