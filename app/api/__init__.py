"""HTTP layer: thin routes over the job service, the store and the queue."""
