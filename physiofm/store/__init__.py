"""The store: its layout, table schemas, tar and Zarr writers and readers, the build and its executors,
and validation."""
