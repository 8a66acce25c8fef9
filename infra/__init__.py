"""segue infrastructure: the embedded local stack (broker, Redis) and deployment files."""
