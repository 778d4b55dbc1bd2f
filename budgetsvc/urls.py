from django.contrib import admin
from django.urls import include, path

from workflows.api.errors import json_not_found, json_server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("workflows.api.urls")),
]

handler404 = json_not_found
handler500 = json_server_error
