"""Land: objects in the S3 landing bucket, which of them are new, and the manifest of those already published."""
