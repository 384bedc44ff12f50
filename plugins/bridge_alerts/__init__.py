"""Alert channels of the bridge: e-mail through the smtp provider, IM group robots through webhooks."""
