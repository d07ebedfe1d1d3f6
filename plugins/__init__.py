"""Built-in plugins; they use only the public hook API, like third-party ones."""
