"""Canary page (being built)."""
import streamlit as st

st.title("Canary")
st.info("This page is being built.")
