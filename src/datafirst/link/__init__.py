"""Link: Splink models, scored edges and person clusters at named thresholds."""
