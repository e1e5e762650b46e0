"""``airlock serve`` assembled: supervised engines behind the gateway (:mod:`.stack`) and the embedded
default model that serves when there is no airlock.yaml (:mod:`.default_model`)."""
