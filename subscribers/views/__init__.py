"""Portal pages of the subscribers app: sign-in, home, institution management, audit log."""
