"""Reading the lake for training: tar samples -> decoded, augmented, batched tensors (WebDataset), and the optional FFCV store."""
