"""Training: input pipelines over prepared image folders (image_folder, augment, input_pipeline)."""
