"""vaelab: train, measure and look at AutoEncoders and Variational AutoEncoders."""

from vaelab.config import RunConfig
from vaelab.data import ImageData, load_data
from vaelab.errors import VaelabError
from vaelab.models import VAE, AutoEncoder, build_model, reconstruct, sample_prior
from vaelab.runs import Run, load_run
from vaelab.train import train

__all__ = [
    "AutoEncoder", "ImageData", "Run", "RunConfig", "VAE", "VaelabError",
    "build_model", "load_data", "load_run", "reconstruct", "sample_prior", "train",
]
