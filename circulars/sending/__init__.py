"""The send engine: numbering, recipient snapshot, batches and delivery records."""
