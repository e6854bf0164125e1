"""Safety page (being built)."""
import streamlit as st

st.title("Safety")
st.info("This page is being built.")
