"""Training data: exact streaming from tar shards, random access to Zarr rows, S3 reads."""
