"""End-to-end jobs behind the launchers: the main job, the demo, and segmentation of DAVIS / YouTube-Objects / video inputs."""
