"""(to be written: see service/app.py)"""

from fastapi import APIRouter

router = APIRouter()
