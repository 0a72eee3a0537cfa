"""Offline training: datasets (nuScenes via nuscenes-devkit; the synthetic world), targets,
losses, trainer and evaluation."""
