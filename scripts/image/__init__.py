"""Container image build/run helpers (buildah + podman, no Docker daemon)."""
