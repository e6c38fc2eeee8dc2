"""Training data: exact streaming from tar shards (:mod:`.stream`), random access to Zarr rows
(:mod:`.zarr_dataset`), the store index both read (:mod:`.index`), S3 reads (:mod:`.s3`)."""
