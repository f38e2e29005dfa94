from .s3 import s3_endpoint, s3_url  # noqa: F401  (fixtures)
