"""The model families, registered in one dict: a family is a small module here plus its formulas in
vaelab.objectives (and, where its prior is not N(0, I), a prior object in vaelab.priors or its own module).

FAMILIES maps each name of vaelab.config.MODELS (the --model choices) to its class; vaelab.models.build_model
builds from it. A new family adds its name to MODELS, its module here and its line below.
"""

from __future__ import annotations

from vaelab.families.ae import AutoEncoder
from vaelab.families.cvae import CVAE
from vaelab.families.iwae import IWAE
from vaelab.families.tcvae import BetaTCVAE
from vaelab.families.vae import VAE
from vaelab.families.vamp import Vamp
from vaelab.families.vqvae import VQVAE

FAMILIES: dict[str, type[AutoEncoder]] = {
    "ae": AutoEncoder,
    "vae": VAE,
    "iwae": IWAE,
    "cvae": CVAE,
    "vamp": Vamp,
    "vqvae": VQVAE,
    "beta-tcvae": BetaTCVAE,
}
