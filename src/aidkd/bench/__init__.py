"""The reproduction suites (CIFAR-100, ImageNet): the published-settings table, its shipped configs, ``aidkd bench``."""
