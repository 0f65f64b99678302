"""protoc output; regenerate with scripts/gen_protos.py."""
