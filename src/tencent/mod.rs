pub mod usersig;
