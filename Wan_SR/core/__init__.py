"""Bottom layer of PS-SR, importing nothing of Wan_SR: the option dataclasses, the one home of
every default (:mod:`.options`), window math and blending (:mod:`.windows`), devices and dtypes
(:mod:`.devices`), atomic file writes (:mod:`.files`), logging and progress bars (:mod:`.log`),
the cache folders (:mod:`.caches`) and several processes under torchrun / accelerate
(:mod:`.distributed`: plans, exchanges, one video's frames in parts to one writer)."""
