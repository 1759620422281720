"""The spool as a bucket (SPEC §12): where it is, the S3 requests it stands on, and the
probe that refuses a server whose conditional writes cannot be trusted."""
