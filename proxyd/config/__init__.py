"""The configuration: TOML in, a validated frozen ``Config`` out; a bad file is a
``ConfigError`` naming the file, line and key.
"""

from proxyd.config._config import (
    Config,
    ConfigError,
    DnsConfig,
    DohProviderConfig,
    LearningConfig,
    ListenAddress,
    MirrorConfig,
    RuleConfig,
    TransparentConfig,
    UpstreamConfig,
    dump_config,
    load_config,
)

__all__ = [
    "Config",
    "ConfigError",
    "DnsConfig",
    "DohProviderConfig",
    "LearningConfig",
    "ListenAddress",
    "MirrorConfig",
    "RuleConfig",
    "TransparentConfig",
    "UpstreamConfig",
    "dump_config",
    "load_config",
]
