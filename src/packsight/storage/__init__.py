"""Object storage: one interface (`base.Storage`) over S3 and a local folder; key rules,
artifact URIs, and the backends the settings name."""
