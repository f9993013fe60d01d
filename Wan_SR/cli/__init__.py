"""PS-SR."""
