"""Judge page (being built)."""
import streamlit as st

st.title("Judge")
st.info("This page is being built.")
