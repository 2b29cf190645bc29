import os

# Quiet mediapipe / TensorFlow Lite logging in tests.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
