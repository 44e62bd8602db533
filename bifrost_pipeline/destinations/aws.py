"""What the AWS destinations (s3, cloudwatch_logs) share: their credentials and the boto3 session."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr, model_validator

from bifrost_pipeline.destinations.base import DestinationConfig


class AwsCredentials(DestinationConfig):
    """Keys or a profile; none: boto3's default chain (AWS_* variables, ~/.aws, web identity, task or
    instance role)."""

    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None  # a named profile of ~/.aws/config (instead of keys)

    @model_validator(mode="after")
    def _pair(self):
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id and secret_access_key go together: set both, or neither")
        if self.session_token and not self.access_key_id:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.profile and self.access_key_id:
            raise ValueError("set either access keys or profile, not both")
        return self


def aws_session(credentials: AwsCredentials | None, region: str | None):
    """A boto3 session from the configured keys or profile, else the default credential chain."""
    import boto3

    cr = credentials
    return boto3.session.Session(
        aws_access_key_id=cr.access_key_id.get_secret_value() if cr and cr.access_key_id else None,
        aws_secret_access_key=cr.secret_access_key.get_secret_value() if cr and cr.secret_access_key else None,
        aws_session_token=cr.session_token.get_secret_value() if cr and cr.session_token else None,
        profile_name=cr.profile if cr else None,
        region_name=region,
    )


def aws_client(service: str, cfg: Any, **config: Any):
    """A boto3 client of ``service`` for a destination's config (its credentials, region, endpoint_url,
    max_attempts and timeouts); ``config``: more botocore Config settings of that service."""
    from botocore.config import Config

    return aws_session(cfg.credentials, cfg.region).client(
        service,
        endpoint_url=cfg.endpoint_url,
        config=Config(
            # total_max_attempts counts the first try (botocore's max_attempts counts only retries)
            retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            **config,
        ),
    )
