"""Training on SpeechBrain: Brain subclasses and the recipe runner."""
