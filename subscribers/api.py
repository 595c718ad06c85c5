"""REST API of the subscribers app: who am I (for scripts checking a token)."""

from rest_framework.response import Response
from rest_framework.views import APIView


class MeApi(APIView):
    def get(self, request):
        principal = request.auth
        return Response(
            {
                "kind": principal.kind,
                "user": principal.user.username if principal.user else None,
                "device": principal.device.name if principal.device else None,
                "institution": {"slug": principal.institution.slug, "name": principal.institution.name} if principal.institution else None,
                "roles": sorted(principal.roles),
                "token_expires_at": principal.token.expires_at.isoformat() if principal.token else None,
            }
        )
