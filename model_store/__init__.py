"""Model bundles: manifest + safetensors weights, architectures, features and training."""
