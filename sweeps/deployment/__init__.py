"""What the compressed network costs where it ships: ONNX export, latency, and the figures logged
from both (`measure`)."""
