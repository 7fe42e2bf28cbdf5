"""aidkd: knowledge distillation for image classification, with AID teacher adaptation."""
__version__ = "0.1.0"
