"""Portal pages of billing, mounted at billing/."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.billing_overview, name="billing-overview"),
    path("invoices/", views.invoice_list, name="billing-invoices"),
    path("invoices/<int:pk>/", views.invoice_detail, name="billing-invoice"),
    path("invoices/<int:pk>/pdf/", views.invoice_pdf, name="billing-invoice-pdf"),
    path("invoices/<int:pk>/csv/", views.invoice_csv, name="billing-invoice-csv"),
    path("invoices/<int:pk>/credit/", views.invoice_credit, name="billing-invoice-credit"),
    path("tariffs/", views.tariff_list, name="billing-tariffs"),
    path("tariffs/<int:pk>/end/", views.tariff_end, name="billing-tariff-end"),
]
