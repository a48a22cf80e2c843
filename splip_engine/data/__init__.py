"""Data layer: decoding, preprocessing, datasets on disk, splits, sampling, synthetic data.

- images: load_image (any path / bytes / PIL / array -> RGB PIL) and ImageDecodeError
- svg: render_svg, SVG sketches rasterised with external references, entities and scripts refused
- strokes: QuickDraw drawings (iter_ndjson, parse_drawing_json) rendered in the PNG sketch style
- transforms: PreprocessSpec, preprocess / preprocess_batch (the one encoder preprocessing), train_transform
- splits: load_unseen_classes (standard ZS-SBIR splits shipped in splits/, or a class list file),
  load_dataset_classes (every class of a dataset, as its split files spell them)
- folder: SBIRFolder (SKETCH_ROOT/<class>/*, PHOTO_ROOT/<class>/*, several roots merged) and ImageSplit
- layouts: LAYOUTS, the datasets as distributed (sketchy, tuberlin, quickdraw), and DataSource
- classnames: matching class names across spellings (case, `_` / space, punctuation)
- pairs: fg_pair_key, Sketchy's sketch <-> photo instance naming
- sampler: TripletSampler (class-balanced or fine-grained triplets)
- datasets: TripletDataset / ImageDataset (lazy, bad images skipped) and collate_skip_bad
- mini: make_mini_dataset, the synthetic shapes dataset for tests and the demo
"""
