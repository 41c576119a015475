"""Generation in the space CLIP made: diffusion, a small UNet, a decoder, a prior and a judge.

Explained in Chapter 7.5 (DALL·E 2 in miniature) and Chapter 7.6 (Stable Diffusion's use of CLIP).
Import the modules by their full path, e.g. ``from clip_tutorial.generate.diffusion import ddim_sample``.
"""
