"""ingest: the HTTP front door that validates records and publishes them as Avro events."""
