"""What a trained model does.

Predictions, thresholds, test-time augmentation, interpretation and Grad-CAM.
"""
