"""Score-based forces (Plainer et al. 2025, arXiv:2506.17139): an energy-based diffusion model of coarse-grained
configurations, trained with denoising score matching and a Fokker-Planck regulariser, whose score at small
diffusion time gives the forces of fast coarse-grained OpenMM MD and whose reverse SDE gives independent
samples. See docs/score.md."""
