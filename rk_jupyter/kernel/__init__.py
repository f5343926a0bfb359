"""The Jupyter side: an ipykernel kernel that translates Jupyter messages into link packets."""
