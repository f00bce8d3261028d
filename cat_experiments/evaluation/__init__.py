"""Test-time evaluation: sampling candidate pools and exact scaling-curve estimators."""
