from django.contrib import admin
from django.urls import include, path

from workflows.api.errors import json_bad_request, json_not_found, json_server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("workflows.api.urls")),
]

handler400 = json_bad_request
handler404 = json_not_found
handler500 = json_server_error
