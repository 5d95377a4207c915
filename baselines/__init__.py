"""Classic style-transfer baselines beside StyleGAN: Gatys et al. optimisation (`nst`), AdaIN with the
published weights (`adain`) and CycleGAN generators with the published weights (`cyclegan`)."""
