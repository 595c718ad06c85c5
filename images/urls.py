"""Portal pages of the archive (uploads; study pages come with the portal work)."""


urlpatterns: list = []
