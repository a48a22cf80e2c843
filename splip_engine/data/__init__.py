"""Data layer: decoding, preprocessing, datasets on disk, splits, sampling, synthetic data.

- images: load_image (any path / bytes / PIL / array -> RGB PIL) and ImageDecodeError
- transforms: PreprocessSpec, preprocess / preprocess_batch (the one encoder preprocessing), train_transform
- splits: load_unseen_classes (standard ZS-SBIR splits shipped in splits/, or a class list file)
- folder: SBIRFolder (SKETCH_ROOT/<class>/*, PHOTO_ROOT/<class>/*) and ImageSplit
- pairs: fg_pair_key, Sketchy's sketch <-> photo instance naming
- sampler: TripletSampler (class-balanced or fine-grained triplets)
- datasets: TripletDataset / ImageDataset (lazy, bad images skipped) and collate_skip_bad
- mini: make_mini_dataset, the synthetic shapes dataset for tests and the demo
"""
