"""Portal pages of the subscribers app: sign-in, home, institution switcher, management pages, audit log."""

from django.contrib.auth import views as auth_views
from django.urls import path

from .views import audit, auth, home, manage, notifications

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", auth.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", auth.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("switch-institution/", auth.switch_institution_view, name="switch-institution"),
    path("account/tokens/", manage.my_tokens, name="my-tokens"),
    path("account/tokens/<int:pk>/revoke/", manage.my_token_revoke, name="my-token-revoke"),
    path("manage/members/", manage.members, name="manage-members"),
    path("manage/members/add/", manage.member_add, name="manage-member-add"),
    path("manage/members/<int:pk>/", manage.member_edit, name="manage-member-edit"),
    path("manage/tokens/", manage.tokens, name="manage-tokens"),
    path("manage/tokens/<int:pk>/revoke/", manage.token_revoke, name="manage-token-revoke"),
    path("manage/ae-titles/", manage.ae_titles, name="manage-ae-titles"),
    path("manage/ae-titles/add/", manage.ae_add, name="manage-ae-add"),
    path("manage/ae-titles/<int:pk>/", manage.ae_edit, name="manage-ae-edit"),
    path("manage/ae-titles/<int:pk>/active/", manage.ae_set_active, name="manage-ae-set-active"),
    path("manage/devices/", manage.devices, name="manage-devices"),
    path("manage/devices/add/", manage.device_add, name="manage-device-add"),
    path("manage/devices/<int:pk>/active/", manage.device_set_active, name="manage-device-set-active"),
    path("audit/", audit.audit_log, name="audit-log"),
    path("notifications/", notifications.notification_list, name="notifications"),
    path("notifications/read/", notifications.notifications_read, name="notifications-read"),
]
