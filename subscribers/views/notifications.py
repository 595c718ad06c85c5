"""The caller's notifications (shares received, finished jobs): read them and mark them read."""

from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .. import services
from ..decorators import member_required
from ..models import Notification


@member_required
def notification_list(request):
    notifications = Notification.objects.filter(user=request.principal.user)[:100]
    return render(request, "subscribers/notifications.html", {"notifications": notifications})


@require_POST
@member_required
def notifications_read(request):
    services.mark_notifications_read(user=request.principal.user)
    return redirect("notifications")
